"""Stage progress and user-facing errors, as one line each on stdout.

A pipeline step prints ``[kubeloop] {json}`` when it ends (stage, seconds, key
result) and ``[kubeloop:error] {json}`` when it stops on bad input. On a cluster
these are ordinary log lines; ``kubeloop run`` picks them out of the local
runner's output to show progress and to print the error itself instead of the
runner's generic "task failed".

Only exceptions that are the user's to fix (kubeloop's own exception classes)
are turned into a short message; anything else keeps its traceback, because
that is a bug.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from kubeloop.errors import UserError

MARK = "[kubeloop] "
ERROR_MARK = "[kubeloop:error] "


# The one base class of the user's mistakes; kept under its old name for callers.
UserFacingError = UserError


@dataclass
class Stage:
    name: str
    result: str = ""
    details: dict[str, Any] = field(default_factory=dict)


def _emit(mark: str, payload: dict[str, Any]) -> None:
    sys.stdout.write(mark + json.dumps(payload, default=str) + "\n")
    sys.stdout.flush()


def _is_user_error(exc: BaseException) -> bool:
    # The user's mistakes (DataError, ValidationFailed, SplitError, StorageError,
    # AliasConflict, ...) derive from UserError and carry messages written for
    # users; anything else is a bug and keeps its traceback and cause chain.
    return isinstance(exc, UserError)


@contextmanager
def stage(name: str) -> Iterator[Stage]:
    """Time a pipeline step and report its outcome in one line. A local run's thread
    budget (``KUBELOOP_THREADS``, see ``kubeloop.local_run``) bounds the step's
    OpenMP and BLAS pools through threadpoolctl, on top of the variables they read."""
    st = Stage(name)
    t0 = time.perf_counter()
    try:
        with _thread_budget():
            yield st
    except Exception as exc:
        if not _is_user_error(exc):
            raise
        _emit(ERROR_MARK, {"stage": name, "error": type(exc).__name__, "message": str(exc)})
        # Exit without a traceback: the message above is the whole story.
        raise SystemExit(2) from None
    _emit(
        MARK,
        {
            "stage": name,
            "seconds": round(time.perf_counter() - t0, 3),
            "result": st.result,
            # Each step is its own process, so this is the step's peak memory.
            "peak_rss_mib": _peak_rss_mib(),
            **st.details,
        },
    )


def _thread_budget() -> contextlib.AbstractContextManager[Any]:
    threads = os.environ.get("KUBELOOP_THREADS", "")
    if not threads.isdigit() or int(threads) < 1:
        return contextlib.nullcontext()
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=int(threads))


def _peak_rss_mib() -> float | None:
    try:
        import resource
    except ImportError:  # not on every platform
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # ru_maxrss is in KiB on Linux, in bytes on macOS.
    kib = peak / 1024 if sys.platform == "darwin" else peak
    return round(kib / 1024, 1)


def format_line(payload: dict[str, Any]) -> str:
    """One progress event as the commands print it: stage, seconds, result."""
    return f"  {payload['stage']:<28} {payload.get('seconds', 0):>7.1f}s  {payload.get('result', '')}"


def parse_line(line: str) -> tuple[str, dict[str, Any]] | None:
    """``("progress"|"error", payload)`` for a marked line, else None."""
    text = line.strip()
    for kind, mark in (("error", ERROR_MARK), ("progress", MARK)):
        if text.startswith(mark):
            try:
                return kind, json.loads(text[len(mark):])
            except json.JSONDecodeError:
                return None
    return None
