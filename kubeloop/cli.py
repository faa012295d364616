"""The ``kubeloop`` command.

    kubeloop run --data URI --target COL [...]    train, gate and register, locally
    kubeloop compile [--pipeline training|monitoring|profiling|drift] [-o FILE]  write a pipeline YAML for a KFP cluster
    kubeloop registry list|show|history|set-alias inspect and move model versions

Exit codes: 0 done (whatever the gate decided), 2 bad input (data, config,
flags), 3 a conflict in the registry (another run moved the alias first),
1 anything unexpected.
"""

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from kubeloop.errors import UserError

EXIT_OK, EXIT_BUG, EXIT_BAD_INPUT, EXIT_CONFLICT = 0, 1, 2, 3
NOTHING_CHANGED = "Nothing was registered; the production model is unchanged"


class CliError(UserError):
    """A mistake in the command line; ``code`` is the exit status."""

    def __init__(self, message: str, code: int = EXIT_BAD_INPUT):
        super().__init__(message)
        self.code = self.exit_code = code


def _err(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# --- run -----------------------------------------------------------------------------


def _load_config(args: argparse.Namespace, **overrides: Any):
    from kubeloop.config import ConfigError, load_config

    try:
        cfg = load_config(getattr(args, "config", None), **overrides)
        if getattr(args, "s3_endpoint", None):
            cfg.storage.endpoint_url = args.s3_endpoint
            # The flag outranks the environment: the storage layer reads
            # AWS_ENDPOINT_URL before the config, and the local pipeline steps
            # inherit this process's environment.
            os.environ["AWS_ENDPOINT_URL"] = args.s3_endpoint
        return cfg
    except ConfigError as exc:
        raise CliError(str(exc)) from None


def cmd_run(args: argparse.Namespace) -> int:
    cfg = _load_config(
        args,
        target=args.target,
        task=args.task,
        time_column=args.time_column,
        id_column=args.id_column,
        model_name=args.model_name,
        registry=args.registry,
    )
    if not cfg.target:
        raise CliError("--target is required (or set target: in the --config file)")
    data = args.data
    if "://" not in data:
        if not Path(data).exists():
            raise CliError(f"data file not found: {data}")
        data = str(Path(data).resolve())
    registry = cfg.registry if "://" in cfg.registry else str(Path(cfg.registry).resolve())
    cfg = cfg.with_overrides(registry=registry)
    from kubeloop.storage import open_store

    open_store(registry, cfg.storage)  # refuses an unsupported URI now, not after ingest

    # Imported only now: the pipeline pulls in KFP and every stage (seconds of
    # imports), and a bad flag, config or path should be refused at once.
    from kubeloop.local_run import PipelineFailed, run_pipeline
    from kubeloop.pipelines.training import build_training_pipeline
    from kubeloop.progress import format_line

    _err(f"kubeloop run: {data} -> model '{cfg.model_name}' in {registry}")
    # One family at a time: each already uses every core here (see train.parallelism).
    pipeline = build_training_pipeline(cfg, parallelism=1)

    def on_event(kind: str, payload: dict[str, Any]) -> None:
        if kind == "progress":
            _err(format_line(payload))

    from kubeloop.pipelines.training import run_config

    # Read before anything runs: a registry that cannot be reached (no such bucket,
    # no server, no permission) is refused now, not after ingest and validation.
    before = _registry_state(registry, cfg, strict=True)
    arguments = {
        "data_uri": data, "target": cfg.target, "task": cfg.task or "",
        "time_column": cfg.time_column or "", "id_column": cfg.id_column or "",
        "model_name": cfg.model_name, "registry": registry, "config": run_config(cfg),
    }
    try:
        run = run_pipeline(pipeline, arguments, work_dir=args.work_dir, on_event=on_event)
    except PipelineFailed as exc:
        code = EXIT_CONFLICT if any(e.get("error") == "AliasConflict" for e in exc.errors) else EXIT_BAD_INPUT
        if not exc.errors:
            code = EXIT_BUG
        _err("")
        for e in exc.errors or [{"stage": "pipeline", "message": str(exc)}]:
            _err(f"error in {e['stage']}: {e['message']}")
        _err(f"(full log: {exc.log_path})")
        _err(_state_change(cfg.model_name, before, _registry_state(registry, cfg)))
        return code

    summary = json.loads(run.outputs)
    summary["seconds"] = round(run.seconds, 1)
    table = _summary_table(summary)
    if args.json:
        _err(table)
        print(json.dumps(summary, allow_nan=False))
    else:
        print(table)
    return EXIT_OK


def _registry_state(registry: str, cfg: Any, *, strict: bool = False) -> dict[str, Any] | None:
    """Versions and production alias of the run's model; None if unreadable, unless
    ``strict``, where the storage error (a UserError naming what to fix) is raised."""
    from kubeloop.registry import Registry

    try:
        reg = Registry(registry, cfg.storage)
        return {"versions": [v.version for v in reg.list_versions(cfg.model_name)],
                "production": reg.get_alias(cfg.model_name, "production")}
    except UserError:
        if strict:
            raise
        return None
    except Exception:  # after a failure the state is reported on a best-effort basis
        if strict:
            raise
        return None


def _state_change(model: str, before: dict[str, Any] | None, after: dict[str, Any] | None) -> str:
    """What a failed run left in the registry, in one sentence, read from the registry."""
    if before is None or after is None:
        return "The registry could not be read to say what changed; check it with `kubeloop registry list`."
    new = [v for v in after["versions"] if v not in before["versions"]]
    if not new and after["production"] == before["production"]:
        return f"{NOTHING_CHANGED} ({before['production'] or 'none yet'})."
    stored = f"{model} {', '.join(new)} stored" if new else "Nothing was registered"
    if after["production"] == before["production"]:
        prod = f"production is unchanged ({before['production'] or 'none'})"
    else:
        prod = f"production moved from {before['production'] or 'none'} to {after['production']}"
    return f"{stored}; {prod}."


def _summary_table(s: dict[str, Any]) -> str:
    gate = s["gate"]
    lines = [
        "",
        f"model      {s['model']} {s['version']} ({s['task']}, {s.get('family', '?')})",
        f"gate       {gate['decision'].upper()}: {gate['reason']}",
        f"production {s.get('production_version') or '(none)'}",
        *[f"WARNING    {note}" for note in s.get("training_notes") or []],
        *([f"sample     {s['training_sample']}"] if s.get("training_sample") else []),
        "",
        f"{'metric':<18} {'this run':>10} {'champion ' + (s.get('champion_version') or '-'):>13} {'baseline':>10}",
    ]
    champ = s.get("champion_metrics") or {}
    base = s.get("baseline_metrics") or {}

    def f(x: Any) -> str:
        return "-" if x is None else f"{x:.4f}"

    for name, value in s["metrics"].items():
        lines.append(f"{name:<18} {f(value):>10} {f(champ.get(name)):>13} {f(base.get(name)):>10}")
    lines += ["", f"model card  {s['artifacts']['model_card']}", f"finished in {s.get('seconds', 0):.1f}s"]
    return "\n".join(lines)


# --- compile -------------------------------------------------------------------------


def cmd_compile(args: argparse.Namespace) -> int:
    from kubeloop.compile import compile_pipeline_with_notes

    cfg = _load_config(
        args, model_name=args.model_name, registry=args.registry, target=args.target,
        task=args.task, time_column=args.time_column, id_column=args.id_column,
    )
    out, notes = compile_pipeline_with_notes(args.pipeline, cfg, args.output or f"{args.pipeline}-pipeline.yaml",
                                             image=args.image)
    for note in notes:
        _err(f"default {note}")
    if not cfg.target:
        _err("target: no default; every run must give it (the KFP UI asks for it)")
    _err(f"wrote {out}")
    if args.json:
        print(json.dumps({"output": str(out), "notes": notes}))
    return EXIT_OK


# --- registry ------------------------------------------------------------------------


def _registry(args: argparse.Namespace):
    from kubeloop.registry import Registry

    cfg = _load_config(args)
    uri = args.registry or os.environ.get("KUBELOOP_REGISTRY") or cfg.registry
    if "://" not in uri and not Path(uri).is_dir():
        # Reading a registry never creates one: a mistyped path is an error, not "no models".
        raise CliError(f"no registry at {Path(uri).resolve()} (give --registry or set $KUBELOOP_REGISTRY)")
    return Registry(uri, cfg.storage)


def _print(data: Any, as_json: bool, text: str) -> None:
    print(json.dumps(data, indent=None if as_json else 2, default=str) if as_json else text)


def cmd_registry(args: argparse.Namespace) -> int:
    reg = _registry(args)
    if args.action == "list":
        if args.name:
            versions = reg.list_versions(args.name)
            aliases = {a: reg.get_alias(args.name, a) for a in ("production", "canary", "previous")}
            data = [
                {"version": v.version, "created_at": v.created_at, "sha256": v.sha256,
                 "aliases": [a for a, target in aliases.items() if target == v.version],
                 "metrics": (v.metadata or {}).get("metrics"), "gate": (v.metadata or {}).get("gate")}
                for v in versions
            ]
            text = "\n".join(
                f"{d['version']:<6} {d['created_at']}  {','.join(d['aliases']) or '-':<20} "
                f"gate={(d['gate'] or {}).get('decision', '-')}"
                for d in data
            ) or f"no versions of {args.name}"
        else:
            data = reg.list_models()
            text = "\n".join(data) or "no models"
        _print(data, args.json, text)
    elif args.action == "show":
        data = reg.show(args.name, args.version or "production")
        _print(data, args.json, json.dumps(data, indent=2, default=str))
    elif args.action == "history":
        data = reg.history(args.name)
        text = "\n".join(
            f"{h.get('updated_at')}  {h.get('alias'):<10} {h.get('previous_version') or '-'} -> {h.get('version')}  {h.get('reason', '')}"
            for h in data
        ) or f"no alias changes for {args.name}"
        _print(data, args.json, text)
    elif args.action == "set-alias":
        expected = ... if args.expect is None else (None if args.expect == "none" else args.expect)
        reg.set_alias(args.name, args.alias, args.version, expected_version=expected, reason=args.reason)
        _print({"model": args.name, "alias": args.alias, "version": args.version}, args.json,
               f"{args.name}: {args.alias} -> {args.version}")
    return EXIT_OK


# --- parser --------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="kubeloop", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)

    def common(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--config", help="YAML config file (flags override it)")
        sp.add_argument("--s3-endpoint", help="S3/MinIO endpoint URL (else AWS_ENDPOINT_URL, else config)")

    r = sub.add_parser("run", help="run the training pipeline locally", description="Run the training pipeline locally through the KFP local runner.")
    r.add_argument("--data", required=True, help="CSV or Parquet file: local path or s3://bucket/key")
    r.add_argument("--target", help="the column to predict")
    r.add_argument("--task", choices=["classification", "regression"], help="inferred from the target when not given")
    r.add_argument("--time-column", help="split by time on this column (oldest rows train, newest test)")
    r.add_argument("--id-column", help="keep all rows of one id in the same split")
    r.add_argument("--model-name", help="registry name of the model (default: model)")
    r.add_argument("--registry", help="registry URI: a directory or s3://bucket/prefix (default: ./registry)")
    r.add_argument("--work-dir", default=".kubeloop", help="where local pipeline runs and logs go (default: .kubeloop)")
    r.add_argument("--json", action="store_true", help="print one JSON summary on stdout")
    common(r)
    r.set_defaults(func=cmd_run)

    c = sub.add_parser("compile", help="write the training (or monitoring) pipeline YAML")
    c.add_argument("--pipeline", choices=["training", "monitoring", "profiling", "drift"], default="training",
                   help="which pipeline (default: training)")
    c.add_argument("--output", "-o", help="the YAML file (default: PIPELINE-pipeline.yaml)")
    c.add_argument("--image", help="container image for every step")
    c.add_argument("--model-name", help="default of the model_name parameter")
    c.add_argument("--registry", help="default of the registry parameter: an s3:// URI (default: s3://models/registry)")
    c.add_argument("--target", help="default of the target parameter (else every run must give it)")
    c.add_argument("--task", choices=["classification", "regression"], help="default of the task parameter")
    c.add_argument("--time-column", help="default of the time_column parameter")
    c.add_argument("--id-column", help="default of the id_column parameter")
    c.add_argument("--json", action="store_true", help="print the output path and defaults as JSON")
    common(c)
    c.set_defaults(func=cmd_compile)

    g = sub.add_parser("registry", help="list, show and move model versions")
    g.add_argument("action", choices=["list", "show", "history", "set-alias"])
    g.add_argument("name", nargs="?", help="model name")
    g.add_argument("version", nargs="?", help="version or alias (show), version (set-alias)")
    g.add_argument("--alias", default="production", help="alias to move (set-alias)")
    g.add_argument("--expect", help="set-alias only if the alias now points at this version ('none': unset)")
    g.add_argument("--reason", default="set by hand", help="recorded in the alias history")
    g.add_argument("--registry", help="registry URI (default: $KUBELOOP_REGISTRY or ./registry)")
    g.add_argument("--json", action="store_true")
    common(g)
    g.set_defaults(func=cmd_registry)

    from kubeloop.commands import register_all

    register_all(sub, common)
    return p


def main(argv: list[str] | None = None) -> int:
    try:
        return _main(argv)
    except BrokenPipeError:
        # `kubeloop registry show ... | head`: the reader left; not an error of ours.
        # Point stdout at /dev/null so the interpreter's final flush stays quiet.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK


def _main(argv: list[str] | None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "registry" and args.action != "list" and not args.name:
        _err(f"kubeloop registry {args.action}: a model name is required")
        return EXIT_BAD_INPUT
    if args.command == "registry" and args.action == "set-alias" and not args.version:
        _err("kubeloop registry set-alias NAME VERSION [--alias production]")
        return EXIT_BAD_INPUT
    try:
        return args.func(args)
    except CliError as exc:
        _err(f"kubeloop: {exc}")
        code = exc.code
    except UserError as exc:
        _err(f"kubeloop: {exc}")
        code = exc.exit_code
    except OSError as exc:
        # A path given on the command line that cannot be created or written
        # (--output, --work-dir, --registry on a read-only disk): the user's to fix.
        where = f": {exc.filename}" if exc.filename else ""
        _err(f"kubeloop: {exc.strerror or exc}{where}")
        code = EXIT_BAD_INPUT
    if args.command == "run" and code == EXIT_BAD_INPUT:
        # Refused before the pipeline started; say so as a failed step does.
        _err(NOTHING_CHANGED + ".")
    return code


if __name__ == "__main__":
    sys.exit(main())
