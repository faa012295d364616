"""``python -m kubeloop.serving``: the predictor process the ServingRuntime runs.

KServe's standard arguments (``--model_name``, ``--model_dir``, ``--http_port``,
``--grpc_port``, ``--enable_grpc``, ...) plus settings from the environment, so an
InferenceService sets them in ``env``:

    KUBELOOP_LOG_URI      prediction-log root (a directory or s3://); unset: no log
    KUBELOOP_SHADOW_URI   model/ folder of a shadow version; unset: no shadow
    KUBELOOP_ROLE         primary (default) or canary
    KUBELOOP_MAX_ROWS     rows per request (default 1000)
    KUBELOOP_MAX_BODY_BYTES  larger request bodies get a 400 unread (default 16 MiB)
    KUBELOOP_LOG_FLUSH_SECONDS, KUBELOOP_LOG_FILE_ROWS, KUBELOOP_LOG_QUEUE_ROWS,
    KUBELOOP_LOG_QUEUE_BYTES (default 64 MiB)
    AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_REGION  (S3)

KServe's server listens on every interface (0.0.0.0 for HTTP, [::] for gRPC);
it has no option to bind one address.
"""

from __future__ import annotations

import argparse
import atexit
import logging
import os
import sys

from kubeloop.serving.schema import DEFAULT_MAX_ROWS


def _env_number(name: str, default: float, kind: type = float) -> float:
    raw = os.environ.get(name)
    if raw in (None, ""):
        return default
    try:
        value = kind(raw)
    except ValueError:
        sys.exit(f"kubeloop.serving: {name}={raw!r} is not a number")
    if value <= 0:
        sys.exit(f"kubeloop.serving: {name} must be positive, got {raw}")
    return value


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    from kserve import model_server

    parser = argparse.ArgumentParser(
        prog="python -m kubeloop.serving", parents=[model_server.parser],
        description=__doc__.split("\n\n")[0],
    )
    parser.add_argument("--model_dir", required=True,
                        help="a registry version's model/ folder: local path or s3:// (KServe: /mnt/models)")
    args, _ = parser.parse_known_args(argv)

    from kubeloop.serving.model import DEFAULT_MAX_BODY_BYTES, KubeloopModel, install
    from kubeloop.storage import StorageError

    log_options = {
        "flush_seconds": _env_number("KUBELOOP_LOG_FLUSH_SECONDS", 5.0),
        "max_file_rows": int(_env_number("KUBELOOP_LOG_FILE_ROWS", 5000, int)),
        "max_queue_rows": int(_env_number("KUBELOOP_LOG_QUEUE_ROWS", 50_000, int)),
        "max_queue_bytes": int(_env_number("KUBELOOP_LOG_QUEUE_BYTES", 64 * 1024 * 1024, int)),
    }
    try:
        model = KubeloopModel(
            args.model_name,
            args.model_dir,
            log_uri=os.environ.get("KUBELOOP_LOG_URI"),
            shadow_uri=os.environ.get("KUBELOOP_SHADOW_URI"),
            role=os.environ.get("KUBELOOP_ROLE") or "primary",
            max_rows=int(_env_number("KUBELOOP_MAX_ROWS", DEFAULT_MAX_ROWS, int)),
            log_options=log_options,
        )
        model.load()
    except (StorageError, ValueError) as exc:
        logging.getLogger("kubeloop.serving").error("cannot serve %s: %s", args.model_dir, exc)
        print(f"kubeloop.serving: cannot serve {args.model_dir}: {exc}", file=sys.stderr)
        return 2
    # KServe unloads (stops) the model on SIGTERM; this covers an exit by any other path.
    atexit.register(model.close)
    install(model_server.app, model,
            max_body_bytes=int(_env_number("KUBELOOP_MAX_BODY_BYTES", DEFAULT_MAX_BODY_BYTES, int)))
    latency_lines = _flag_given(argv, "--enable_latency_logging") and args.enable_latency_logging
    server = model_server.ModelServer(
        http_port=args.http_port,
        grpc_port=args.grpc_port,
        enable_grpc=args.enable_grpc,
        workers=1,
        # The prediction log and kubeloop_request_latency_seconds carry each request's
        # latency; KServe's own log lines per request (its latency line and its timing
        # middleware's two trace lines) would cost the hot path time. Opt back in with
        # --enable_latency_logging=true.
        enable_latency_logging=latency_lines,
    )
    if not latency_lines:
        # Set after the server configured logging (it resets the levels).
        logging.getLogger("kserve.trace").setLevel(logging.WARNING)
    server.start([model])
    model.close()
    return 0


def _flag_given(argv: list[str], flag: str) -> bool:
    return any(a == flag or a.startswith(flag + "=") for a in argv)


if __name__ == "__main__":
    sys.exit(main())
