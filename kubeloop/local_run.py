"""Run a kubeloop pipeline on this machine through the KFP local runner.

Each step runs as a subprocess of this Python, exactly the code a cluster pod
runs. The runner's own chatter (executor inputs, step logs) goes to a log file;
the steps' one-line progress and error markers (see ``kubeloop.progress``) are
handed to ``on_event`` as they arrive, so the CLI can show one line per stage.
"""

from __future__ import annotations

import builtins
import contextlib
import io
import os
import shutil
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kubeloop.progress import parse_line

Event = tuple[str, dict[str, Any]]

# The variables the OpenMP, BLAS and joblib (loky) pools read when a step starts, and
# the one the step applies through threadpoolctl (kubeloop.progress.stage).
THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "LOKY_MAX_CPU_COUNT")
THREADS_VARIABLE = "KUBELOOP_THREADS"


def machine_cores() -> int:
    """The cores this process may run on (its CPU affinity, else the machine's)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not on every platform
        return max(1, os.cpu_count() or 1)


def thread_budget(*, cores: int, concurrent_steps: int = 1, cpu_limit: int | None = None) -> int:
    """Threads one local step may use: its CPU limit when one is set (at most the
    machine's cores), else the cores divided among the steps that run at once. Two
    training steps that each start a thread per core beside one other busy process
    ran a 200,000-row training 4.9x slower on 2 cores."""
    if cores < 1 or concurrent_steps < 1:
        raise ValueError(f"cores and concurrent_steps must be at least 1, got {cores}, {concurrent_steps}")
    if cpu_limit is not None:
        return max(1, min(int(cpu_limit), cores))
    return max(1, cores // concurrent_steps)


def thread_environment(threads: int) -> dict[str, str]:
    """The environment that sizes a step's thread pools to ``threads``, as the CPU
    limit does on a cluster."""
    value = str(int(threads))
    return {**{name: value for name in THREAD_VARIABLES}, THREADS_VARIABLE: value}


class PipelineFailed(RuntimeError):
    """A step failed. ``errors`` holds the user-facing errors the steps reported."""

    def __init__(self, message: str, errors: list[dict[str, Any]], log_path: Path):
        super().__init__(message)
        self.errors = errors
        self.log_path = log_path


class _MarkerTee(io.TextIOBase):
    """A stdout stand-in: every line to the log, marked lines to the callback."""

    def __init__(self, log: io.TextIOBase, on_event: Callable[[str, dict[str, Any]], None]):
        self._log = log
        self._on_event = on_event
        self._buf = ""

    def writable(self) -> bool:
        return True

    def write(self, s: str) -> int:
        self._log.write(s)
        self._buf += s
        while "\n" in self._buf:
            line, self._buf = self._buf.split("\n", 1)
            parsed = parse_line(line)
            if parsed:
                self._on_event(*parsed)
        return len(s)

    def flush(self) -> None:
        self._log.flush()


@dataclass
class LocalRun:
    outputs: Any
    events: list[Event] = field(default_factory=list)
    log_path: Path | None = None
    seconds: float = 0.0


@contextlib.contextmanager
def _private_tmpdir(root: Path) -> Iterator[Path]:
    # The runner's shell wrapper makes a `mktemp -d` directory per step and never
    # removes it; pointing TMPDIR at a directory of ours lets us clean up after it.
    tmp = Path(tempfile.mkdtemp(prefix="steps-", dir=root))
    old = os.environ.get("TMPDIR")
    os.environ["TMPDIR"] = str(tmp)
    try:
        yield tmp
    finally:
        if old is None:
            os.environ.pop("TMPDIR", None)
        else:
            os.environ["TMPDIR"] = old
        shutil.rmtree(tmp, ignore_errors=True)


def run_pipeline(
    pipeline: Any,
    arguments: dict[str, Any],
    *,
    work_dir: str | Path,
    on_event: Callable[[str, dict[str, Any]], None] | None = None,
) -> LocalRun:
    """Run ``pipeline`` (a ``@dsl.pipeline``) with ``arguments`` under kfp.local."""
    from kfp import local

    work = Path(work_dir).resolve()
    (work / "runs").mkdir(parents=True, exist_ok=True)
    (work / "logs").mkdir(parents=True, exist_ok=True)
    log_path = work / "logs" / f"{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.log"
    events: list[Event] = []
    errors: list[dict[str, Any]] = []

    def handle(kind: str, payload: dict[str, Any]) -> None:
        events.append((kind, payload))
        if kind == "error":
            errors.append(payload)
        if on_event:
            on_event(kind, payload)

    # The runner warns that the project image is "non-Python" and that resource
    # requests are no-ops locally; both are expected here and only confuse users.
    warnings.filterwarnings("ignore", module=r"kfp\.local")
    local.init(
        runner=local.SubprocessRunner(use_venv=False),
        pipeline_root=str(work / "runs"),
        raise_on_error=True,
    )
    t0 = time.perf_counter()
    # kfp.local indents each task's output by swapping builtins.print for the task's
    # duration; when a ParallelFor runs tasks at once, the swaps interleave and an
    # indenting print outlives the run (every later print of this process gains
    # leading spaces). The run must leave print as it found it.
    print_before = builtins.print
    with open(log_path, "w") as log, _private_tmpdir(work) as _:
        tee = _MarkerTee(log, handle)
        try:
            with contextlib.redirect_stdout(tee):
                task = pipeline(**arguments)
        except RuntimeError as exc:
            msg = "; ".join(e["message"] for e in errors) or _strip_ansi(str(exc))
            raise PipelineFailed(msg, errors, log_path) from None
        finally:
            builtins.print = print_before
            sys.stdout.flush()
    return LocalRun(task.output, events, log_path, time.perf_counter() - t0)


def _strip_ansi(text: str) -> str:
    import re

    return re.sub(r"\x1b\[[0-9;]*m", "", text)
